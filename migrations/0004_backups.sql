CREATE TABLE `backup_keys` (
	`server_id` text PRIMARY KEY NOT NULL,
	`recipient` text NOT NULL,
	`wrapped_identity` text NOT NULL,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `backup_parts` (
	`backup_id` text NOT NULL,
	`part_number` integer NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`etag` text NOT NULL,
	`uploaded_at` integer NOT NULL,
	PRIMARY KEY(`backup_id`, `part_number`),
	FOREIGN KEY (`backup_id`) REFERENCES `backups`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `backups` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`host_id` text NOT NULL,
	`trigger` text NOT NULL,
	`status` text NOT NULL,
	`r2_key` text NOT NULL,
	`upload_id` text NOT NULL,
	`part_size` integer NOT NULL,
	`size_bytes` integer,
	`sha256` text,
	`parts_json` text,
	`progress_bytes` integer DEFAULT 0 NOT NULL,
	`error` text,
	`job_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`started_at` integer,
	`completed_at` integer,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `backups_server_created_idx` ON `backups` (`server_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `backups_status_idx` ON `backups` (`status`);--> statement-breakpoint
CREATE UNIQUE INDEX `backups_one_unfinished_per_server` ON `backups` (`server_id`) WHERE status IN ('pending', 'running');--> statement-breakpoint
ALTER TABLE `servers` ADD `previous_status` text;