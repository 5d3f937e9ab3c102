CREATE TABLE `host_drains` (
	`id` text PRIMARY KEY NOT NULL,
	`host_id` text NOT NULL,
	`requested_by` text NOT NULL,
	`concurrency` integer NOT NULL,
	`started_at` integer NOT NULL,
	`finished_at` integer,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `host_drains_one_unfinished_per_host` ON `host_drains` (`host_id`) WHERE finished_at IS NULL;--> statement-breakpoint
CREATE TABLE `server_migrations` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`source_host_id` text NOT NULL,
	`target_host_id` text NOT NULL,
	`drain_id` text,
	`requested_by` text NOT NULL,
	`phase` text NOT NULL,
	`current_job_id` text,
	`backup_id` text,
	`error` text,
	`started_at` integer NOT NULL,
	`source_stopped_at` integer,
	`switched_at` integer,
	`serving_at` integer,
	`finished_at` integer,
	`downtime_ms` integer,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`source_host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`target_host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `server_migrations_server_idx` ON `server_migrations` (`server_id`,`started_at`);--> statement-breakpoint
CREATE INDEX `server_migrations_drain_idx` ON `server_migrations` (`drain_id`);--> statement-breakpoint
CREATE INDEX `server_migrations_job_idx` ON `server_migrations` (`current_job_id`);--> statement-breakpoint
CREATE UNIQUE INDEX `server_migrations_one_unfinished_per_server` ON `server_migrations` (`server_id`) WHERE finished_at IS NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `reserved_on_host_id` text REFERENCES hosts(id);