"""Helpers the tests import (not fixtures): processes, servers, stores, data."""
