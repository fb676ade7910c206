"""The ``prebook`` command line: runs Prebook's services and talks to its API."""
