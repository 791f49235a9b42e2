-- The store position up to which every event is known to be in the read model (the projector's
-- catch-up from the event store starts there). One row; it only moves forward.

-- +goose Up
-- +goose StatementBegin
IF OBJECT_ID(N'dbo.applied_position') IS NULL
    CREATE TABLE dbo.applied_position (
        id       INT NOT NULL PRIMARY KEY CHECK (id = 1),
        position BIGINT NOT NULL
    );
-- +goose StatementEnd
-- +goose StatementBegin
IF NOT EXISTS (SELECT 1 FROM dbo.applied_position WHERE id = 1)
    INSERT INTO dbo.applied_position (id, position) VALUES (1, 0);
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
IF OBJECT_ID(N'dbo.applied_position') IS NOT NULL
    DROP TABLE dbo.applied_position;
-- +goose StatementEnd
