"""Events for integrators: the transactional outbox, the feed, and webhook delivery."""
