-- Hook notifications waiting for delivery (the outbox): written in the
-- transaction of the change each reports, deleted once delivered. Of each
-- key (an upload, a file) only the oldest is claimed at a time, so a key's
-- events go out in order; `due_at` is when it may be tried next (a claim
-- moves it past the delivery's deadline).
CREATE TABLE IF NOT EXISTS hook_outbox (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_outbox_key ON hook_outbox (key, seq);
CREATE INDEX IF NOT EXISTS hook_outbox_due ON hook_outbox (due_at);
