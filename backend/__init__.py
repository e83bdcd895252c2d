"""The memory backend: REST /api/*, MCP /mcp and SSE /api/events over SQLite."""

__version__ = "0.1.0"
