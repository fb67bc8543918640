"""Change events between replicas: a small publish/subscribe seam that the store implements (issue 9)."""
