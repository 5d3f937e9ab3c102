CREATE TABLE `server_import_parts` (
	`import_id` text NOT NULL,
	`part_number` integer NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`etag` text NOT NULL,
	`uploaded_at` integer NOT NULL,
	PRIMARY KEY(`import_id`, `part_number`),
	FOREIGN KEY (`import_id`) REFERENCES `server_imports`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `server_imports` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`user_id` text NOT NULL,
	`status` text NOT NULL,
	`r2_key` text NOT NULL,
	`upload_id` text NOT NULL,
	`part_size` integer NOT NULL,
	`size_bytes` integer NOT NULL,
	`wrapped_passphrase` text,
	`job_id` text,
	`error` text,
	`counts_json` text,
	`created_at` integer NOT NULL,
	`uploaded_at` integer,
	`finished_at` integer,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `server_imports_server_created_idx` ON `server_imports` (`server_id`,`created_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `server_imports_one_unfinished_per_server` ON `server_imports` (`server_id`) WHERE status IN ('uploading', 'uploaded', 'importing');