"""Prebook's executor: prepares each booking, parks it on a precise timer and fires it."""
