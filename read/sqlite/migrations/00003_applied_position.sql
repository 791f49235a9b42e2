-- The store position up to which every event is known to be in the read model (the projector's
-- catch-up from the event store starts there). One row; it only moves forward. A read model made
-- anew has none, so its catch-up reads the whole store once.

-- +goose Up
CREATE TABLE IF NOT EXISTS applied_position (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT OR IGNORE INTO applied_position (id, position) VALUES (1, 0);

-- +goose Down
DROP TABLE IF EXISTS applied_position;
