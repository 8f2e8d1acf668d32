"""Collection names, in one place (the frontend and the rules use the same)."""

USERS = "users"
VAPI_ASSISTANTS = "assistants"
OPENAI_ASSISTANTS = "openaiAssistants"
TOKEN_USAGE = "tokenUsage"
USAGE_EVENTS = "usageEvents"
