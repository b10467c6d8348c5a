"""Long measurements for `make bench`; never part of `make test`."""
