CREATE TABLE `legal_export_parts` (
	`export_id` text NOT NULL,
	`part_number` integer NOT NULL,
	`size` integer NOT NULL,
	`sha256` text NOT NULL,
	`etag` text NOT NULL,
	`uploaded_at` integer NOT NULL,
	PRIMARY KEY(`export_id`, `part_number`),
	FOREIGN KEY (`export_id`) REFERENCES `legal_exports`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `legal_exports` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`host_id` text NOT NULL,
	`operator_id` text NOT NULL,
	`reference` text NOT NULL,
	`scope_json` text NOT NULL,
	`recipient` text NOT NULL,
	`notice` text NOT NULL,
	`notice_barred_reason` text,
	`job_id` text NOT NULL,
	`status` text NOT NULL,
	`r2_key` text NOT NULL,
	`upload_id` text NOT NULL,
	`part_size` integer NOT NULL,
	`size_bytes` integer,
	`sha256` text,
	`parts_json` text,
	`records_json` text,
	`worker_r2_key` text NOT NULL,
	`worker_size_bytes` integer,
	`worker_sha256` text,
	`worker_records_json` text,
	`error` text,
	`created_at` integer NOT NULL,
	`finished_at` integer,
	`files_deleted_at` integer,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `legal_exports_server_idx` ON `legal_exports` (`server_id`);--> statement-breakpoint
CREATE INDEX `legal_exports_finished_idx` ON `legal_exports` (`finished_at`);