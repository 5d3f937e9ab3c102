CREATE TABLE `server_export_parts` (
	`export_id` text NOT NULL,
	`part_number` integer NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`etag` text NOT NULL,
	`uploaded_at` integer NOT NULL,
	PRIMARY KEY(`export_id`, `part_number`),
	FOREIGN KEY (`export_id`) REFERENCES `server_exports`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `server_exports` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`user_id` text NOT NULL,
	`host_id` text NOT NULL,
	`job_id` text NOT NULL,
	`status` text NOT NULL,
	`r2_key` text NOT NULL,
	`upload_id` text NOT NULL,
	`part_size` integer NOT NULL,
	`size_bytes` integer,
	`sha256` text,
	`parts_json` text,
	`progress_bytes` integer DEFAULT 0 NOT NULL,
	`error` text,
	`created_at` integer NOT NULL,
	`ready_at` integer,
	`expires_at` integer,
	`finished_at` integer,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `server_exports_server_created_idx` ON `server_exports` (`server_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `server_exports_expires_idx` ON `server_exports` (`status`,`expires_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `server_exports_one_unfinished_per_server` ON `server_exports` (`server_id`) WHERE status IN ('queued', 'running');