-- One row per engine process: inserted at start, completed at stop.
-- A row whose stopped_at stays NULL is a run that crashed or was killed.
CREATE TABLE engine_runs (
  id bigserial PRIMARY KEY,
  instance_id uuid NOT NULL,
  version text NOT NULL,
  host text NOT NULL,
  pid integer NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz NULL,
  exit_code integer NULL,
  config_checksum text NOT NULL
);

CREATE INDEX engine_runs_started_at_idx ON engine_runs (started_at);
