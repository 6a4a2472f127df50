"""Reference and deliberately faulty vision MCP servers."""
