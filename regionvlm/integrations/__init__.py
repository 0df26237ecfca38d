"""Optional bridges to other frameworks. Each submodule imports its framework and is imported
only on request (``import regionvlm.integrations.lavis``); nothing in the main package
imports them, so the project runs without any of those frameworks installed."""
