"""The bottom layer: small IR building blocks every stage may import; it imports nothing above it."""
