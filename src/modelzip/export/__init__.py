"""Exporters: a compressed model out of modelzip into another runtime's format."""
