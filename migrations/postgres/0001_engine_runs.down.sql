DROP TABLE engine_runs;
