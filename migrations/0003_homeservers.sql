CREATE TABLE `admin_password_links` (
	`id` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`used_at` integer,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `certificates` (
	`host_id` text NOT NULL,
	`server_name` text NOT NULL,
	`not_before` integer,
	`not_after` integer NOT NULL,
	`issuer` text NOT NULL,
	`updated_at` integer NOT NULL,
	`alerted_at` integer,
	PRIMARY KEY(`host_id`, `server_name`),
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
ALTER TABLE `servers` ADD `plan_id` text DEFAULT 'starter' NOT NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `status` text DEFAULT 'provisioning' NOT NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `status_reason` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `synapse_version` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `admin_user_id` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `updated_at` integer DEFAULT 0 NOT NULL;