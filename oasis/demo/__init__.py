"""The demo's job scripts and data: package data, uploaded to the service as job binaries by `oasis demo`."""
