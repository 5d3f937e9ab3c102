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
	`created_at` integer NOT NULL,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`operator_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `legal_exports_server_idx` ON `legal_exports` (`server_id`);