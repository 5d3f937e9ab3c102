CREATE TABLE `storage_alerts` (
	`server_id` text NOT NULL,
	`threshold` real NOT NULL,
	`crossed_at` integer NOT NULL,
	`notified_at` integer,
	`used_bytes` real NOT NULL,
	`quota_bytes` real NOT NULL,
	PRIMARY KEY(`server_id`, `threshold`),
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
ALTER TABLE `workload_usage` ADD `quota_used_bytes` real;--> statement-breakpoint
ALTER TABLE `workload_usage` ADD `quota_bytes` real;--> statement-breakpoint
CREATE INDEX `workload_usage_resolution_at_idx` ON `workload_usage` (`resolution`,`at`);