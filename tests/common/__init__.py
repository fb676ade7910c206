"""Tests of libs/common (prebook_common)."""
