"""Agents that plan and execute vision workflows over MCP servers."""
