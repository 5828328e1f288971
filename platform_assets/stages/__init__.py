"""Asset factories, one module per pipeline stage; each asset body is a thin shell around `ml`."""
