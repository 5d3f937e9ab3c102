CREATE TABLE `check_results` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`server_id` text,
	`check_id` text NOT NULL,
	`result` text NOT NULL,
	`summary` text NOT NULL,
	`facts` text NOT NULL,
	`checked_at` integer NOT NULL,
	`job_id` text,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `check_results_server_idx` ON `check_results` (`server_id`,`check_id`,`checked_at`);--> statement-breakpoint
CREATE INDEX `check_results_user_idx` ON `check_results` (`user_id`,`check_id`,`checked_at`);--> statement-breakpoint
CREATE INDEX `check_results_result_idx` ON `check_results` (`result`,`checked_at`);