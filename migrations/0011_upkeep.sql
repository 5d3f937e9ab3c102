CREATE TABLE `upkeep_runs` (
	`job_id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`database_bytes_before` integer NOT NULL,
	`database_bytes_after` integer NOT NULL,
	`state_groups_state_rows_before` integer NOT NULL,
	`state_groups_state_rows_after` integer NOT NULL,
	`media_bytes_before` integer NOT NULL,
	`media_bytes_after` integer NOT NULL,
	`remote_media_deleted` integer NOT NULL,
	`compressor_ms` integer NOT NULL,
	`finished_at` integer NOT NULL,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `upkeep_runs_server_idx` ON `upkeep_runs` (`server_id`,`finished_at`);