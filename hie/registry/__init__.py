"""Registry: who may call the exchange — hospitals and their keys, practitioners,
patient portal accounts, and the administrator and privacy-officer roles."""
