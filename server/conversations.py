"""Chat conversations and messages in SQLite: the SQL, and reads and writes through the Store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from server.events import format_ms
from server.store import Store

INSERT_CONVERSATION = "INSERT INTO conversations (id, shop_id, created_at, updated_at) VALUES (?, ?, ?, ?)"
TOUCH_CONVERSATION = "UPDATE conversations SET updated_at = ? WHERE id = ?"
SELECT_CONVERSATION = "SELECT id, shop_id, created_at, updated_at FROM conversations WHERE id = ?"
INSERT_MESSAGE = """
INSERT INTO messages (id, conversation_id, shop_id, role, content, payload, input_tokens, output_tokens, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SELECT_MESSAGES = """
SELECT id, role, content, payload, created_at FROM messages WHERE conversation_id = ? ORDER BY created_at, rowid
"""
SELECT_LAST_MESSAGES = """
SELECT role, content FROM (
    SELECT role, content, created_at, rowid FROM messages WHERE conversation_id = ?
    ORDER BY created_at DESC, rowid DESC LIMIT ?
) ORDER BY created_at, rowid
"""
SELECT_TOKENS_SINCE = """
SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM messages WHERE shop_id = ? AND created_at >= ?
"""


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    shop_id: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange to store: the question and the answer with its evidence."""

    conversation_id: str
    shop_id: str
    is_new: bool
    user_id: str
    question: str
    assistant_id: str
    answer: str
    payload: dict[str, Any]
    input_tokens: int
    output_tokens: int
    at_ms: int


async def find_conversation(store: Store, conversation_id: str) -> Conversation | None:
    row = await store.fetchone(SELECT_CONVERSATION, (conversation_id,))
    return Conversation(row[0], row[1], int(row[2]), int(row[3])) if row else None


async def last_turns(store: Store, conversation_id: str, messages: int) -> list[tuple[str, str]]:
    """The last `messages` messages as (role, content), oldest first."""
    rows = await store.fetchall(SELECT_LAST_MESSAGES, (conversation_id, messages))
    return [(str(r[0]), str(r[1])) for r in rows]


async def tokens_since(store: Store, shop_id: str, since_ms: int) -> int:
    row = await store.fetchone(SELECT_TOKENS_SINCE, (shop_id, since_ms))
    return int(row[0]) if row else 0


async def save_turn(store: Store, turn: Turn) -> None:
    """The question and the answer in one transaction: a failed request stores neither."""

    async def write(conn: aiosqlite.Connection) -> None:
        if turn.is_new:
            await conn.execute(INSERT_CONVERSATION, (turn.conversation_id, turn.shop_id, turn.at_ms, turn.at_ms))
        else:
            await conn.execute(TOUCH_CONVERSATION, (turn.at_ms, turn.conversation_id))
        await conn.execute(INSERT_MESSAGE, (turn.user_id, turn.conversation_id, turn.shop_id, "user", turn.question,
                                            "{}", 0, 0, turn.at_ms))
        await conn.execute(INSERT_MESSAGE, (turn.assistant_id, turn.conversation_id, turn.shop_id, "assistant",
                                            turn.answer, orjson.dumps(turn.payload).decode(), turn.input_tokens,
                                            turn.output_tokens, turn.at_ms))

    await store.write(write)


async def messages_of(store: Store, conversation_id: str) -> list[dict[str, Any]]:
    out = []
    for message_id, role, content, payload, created_at in await store.fetchall(SELECT_MESSAGES, (conversation_id,)):
        item: dict[str, Any] = {"id": message_id, "role": role, "content": content,
                                "createdAt": format_ms(int(created_at))}
        if role == "assistant":
            item.update(orjson.loads(payload))
        out.append(item)
    return out
