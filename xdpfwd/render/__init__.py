"""Everything xdpfwd shows, above the model only: lines (errors, warnings, what a
changing command did; plain text), documents (JSON, Prometheus) and tables (rich,
imported only by the commands that draw one)."""
