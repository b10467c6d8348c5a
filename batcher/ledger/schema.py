"""The ledger's schema: numbered migrations, run in order inside one transaction."""

from __future__ import annotations

import sqlite3

APPLICATION_ID = 0x42415443  # "BATC": marks a file as a batcher ledger

# Each migration takes the ledger from the version before it to its own number; a new ledger
# runs them all. Never edit a released migration: add the next one.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE ids (
        user_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        source_file TEXT,
        source_row INTEGER,
        batch_id INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER,
        error_code TEXT,
        error_message TEXT,
        request_id TEXT,
        client_request_id TEXT,
        sent_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX ids_state ON ids (state);
    CREATE INDEX ids_batch ON ids (batch_id);
    CREATE TABLE batches (
        batch_id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE attempts (
        attempt_id INTEGER PRIMARY KEY,
        batch_id INTEGER NOT NULL REFERENCES batches (batch_id),
        client_request_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        http_status INTEGER,
        error_code TEXT,
        error_message TEXT,
        request_id TEXT,
        outcome TEXT
    );
    """,
    2: """
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        tool_version TEXT NOT NULL,
        os_user TEXT,
        host TEXT,
        config_digest TEXT,
        inputs TEXT NOT NULL DEFAULT '[]',
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT
    );
    ALTER TABLE attempts ADD COLUMN run_id INTEGER REFERENCES runs (run_id);
    """,
    # Actions as data: one step per user per action, users apart, look-ups cached. A v2 ledger
    # held one action (meta 'action'), its per-ID states in 'ids', 'confirmed' for done.
    3: """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        source_file TEXT,
        source_row INTEGER,
        input_value TEXT,
        matched_by TEXT,
        user_type TEXT,
        account_enabled INTEGER
    );
    CREATE TABLE steps (
        user_id TEXT NOT NULL REFERENCES users (user_id),
        action TEXT NOT NULL,
        state TEXT NOT NULL,
        batch_id INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        in_flight INTEGER NOT NULL DEFAULT 0,  -- a request carrying it has no answer yet
        maybe_applied INTEGER NOT NULL DEFAULT 0,  -- an answer said it may have been applied
        -- the last answer
        last_status INTEGER, error_code TEXT, error_message TEXT, request_id TEXT,
        client_request_id TEXT, sent_at TEXT, finished_at TEXT,
        PRIMARY KEY (user_id, action)
    );
    CREATE INDEX steps_state ON steps (state, action);
    CREATE INDEX steps_batch ON steps (batch_id);
    CREATE TABLE lookups (
        kind TEXT NOT NULL,
        input_value TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user_id TEXT,
        user_principal_name TEXT,
        matched_by TEXT,
        user_type TEXT,
        account_enabled INTEGER,
        reason TEXT,
        source_file TEXT,
        source_row INTEGER,
        looked_up_at TEXT NOT NULL,
        PRIMARY KEY (kind, input_value)
    );
    CREATE INDEX lookups_user ON lookups (user_id);
    ALTER TABLE batches ADD COLUMN action TEXT;
    ALTER TABLE runs ADD COLUMN command_line TEXT;
    ALTER TABLE runs ADD COLUMN cwd TEXT;
    INSERT INTO meta (key, value)
        SELECT 'actions', CASE value WHEN 'confirmCompromised' THEN 'confirm' ELSE value END
        FROM meta WHERE key = 'action';
    INSERT INTO users (user_id, source_file, source_row, input_value, matched_by)
        SELECT user_id, source_file, source_row, user_id, 'object_id' FROM ids ORDER BY rowid;
    INSERT INTO steps (user_id, action, state, batch_id, attempts, in_flight, maybe_applied,
                       last_status, error_code, error_message, request_id, client_request_id,
                       sent_at, finished_at)
        SELECT user_id, (SELECT value FROM meta WHERE key = 'actions'),
               CASE WHEN state = 'confirmed' THEN 'done'
                    WHEN state = 'sending' AND attempts = 0 THEN 'planned'
                    ELSE state END,
               batch_id, attempts,
               state = 'sending' AND EXISTS (SELECT 1 FROM attempts a
                   WHERE a.batch_id = ids.batch_id AND a.outcome IS NULL),
               EXISTS (SELECT 1 FROM attempts a WHERE a.batch_id = ids.batch_id
                   AND a.outcome IN ('accepted', 'server_error', 'no_answer')),
               last_status, error_code, error_message, request_id, client_request_id,
               sent_at, finished_at
        FROM ids ORDER BY rowid;
    UPDATE batches SET action = (SELECT value FROM meta WHERE key = 'actions'),
                       state = CASE state WHEN 'confirmed' THEN 'done' ELSE state END;
    DROP TABLE ids;
    DELETE FROM meta WHERE key = 'action';
    """,
    # A step's state is one of StepState's (states.py; a test holds the two lists equal): the
    # table again with a CHECK, since SQLite cannot add one to a table that exists.
    4: """
    CREATE TABLE steps_checked (
        user_id TEXT NOT NULL REFERENCES users (user_id),
        action TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('planned', 'sending', 'done', 'failed', 'unknown', 'skipped')),
        batch_id INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        in_flight INTEGER NOT NULL DEFAULT 0,
        maybe_applied INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER, error_code TEXT, error_message TEXT, request_id TEXT,
        client_request_id TEXT, sent_at TEXT, finished_at TEXT,
        PRIMARY KEY (user_id, action)
    );
    INSERT INTO steps_checked (user_id, action, state, batch_id, attempts, in_flight,
                               maybe_applied, last_status, error_code, error_message,
                               request_id, client_request_id, sent_at, finished_at)
        SELECT user_id, action, state, batch_id, attempts, in_flight, maybe_applied,
               last_status, error_code, error_message, request_id, client_request_id,
               sent_at, finished_at
        FROM steps ORDER BY rowid;
    DROP TABLE steps;
    ALTER TABLE steps_checked RENAME TO steps;
    CREATE INDEX steps_state ON steps (state, action);
    CREATE INDEX steps_batch ON steps (batch_id);
    """,
    # What a run found before it acted (e.g. already confirmed compromised): undo leaves it.
    5: """
    CREATE TABLE before (
        user_id TEXT NOT NULL,
        action TEXT NOT NULL,
        value TEXT,
        read_at TEXT NOT NULL,
        PRIMARY KEY (user_id, action)
    );
    """,
    # What the look-up read of whether a user is synced from on-premises (reset-password skips
    # them); NULL in older rows: not read.
    6: """
    ALTER TABLE lookups ADD COLUMN on_premises_sync INTEGER;
    """,
    # The guards' verdicts: users a run kept from some or all actions (protected, held_back),
    # the entry or roles why; the latest run's decision per user.
    7: """
    CREATE TABLE guarded (
        user_id TEXT PRIMARY KEY,
        verdict TEXT NOT NULL CHECK (verdict IN ('protected', 'held_back')),
        why TEXT NOT NULL,
        roles TEXT,
        decided_at TEXT NOT NULL
    );
    """,
    # Steps that discover their work (list, then act): each child item (an authentication
    # method, an inbox rule) with its own state and before-image, and which lists were read.
    # Numbered 8: another branch adds a 7; the runner takes the numbers there are, in order.
    8: """
    CREATE TABLE listings (
        user_id TEXT NOT NULL,
        action TEXT NOT NULL,
        listed_at TEXT NOT NULL,
        found INTEGER NOT NULL,
        PRIMARY KEY (user_id, action)
    );
    CREATE TABLE items (
        user_id TEXT NOT NULL,
        action TEXT NOT NULL,
        item_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        position INTEGER NOT NULL,  -- the order to act in (a default phone last)
        state TEXT NOT NULL CHECK (state IN
            ('planned', 'sending', 'done', 'gone', 'failed', 'unknown', 'kept')),
        reason TEXT,  -- why kept, or why it failed
        before TEXT NOT NULL,  -- the before-image, JSON, masked
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER, error_code TEXT, error_message TEXT, request_id TEXT,
        client_request_id TEXT, sent_at TEXT, finished_at TEXT,
        undone_at TEXT,  -- an undo put it back (re-enabled a rule)
        PRIMARY KEY (user_id, action, item_id)
    );
    CREATE INDEX items_state ON items (action, state);
    """,
    # What each source read straight from Graph returned (an incident's evidence, risky users,
    # sign-ins): a resume acts on this snapshot, --refresh reads the sources again.
    9: """
    CREATE TABLE source_rows (
        source TEXT NOT NULL,
        source_row INTEGER NOT NULL,
        input_value TEXT NOT NULL,
        kind TEXT NOT NULL,
        source_file TEXT NOT NULL,
        evidence TEXT NOT NULL,
        read_at TEXT NOT NULL,
        PRIMARY KEY (source, source_row)
    );
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into whole SQL statements (a ';' inside a literal does not split)."""
    done: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            done.append(current.strip())
            current = ""
    if current.strip():
        done.append(current.strip())
    return done
