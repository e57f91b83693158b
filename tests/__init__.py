"""facetrace tests: real photos, real databases, the real CLI."""
