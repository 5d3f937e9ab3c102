CREATE TABLE `server_dns` (
	`server_id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`host_id` text,
	`a_record_id` text,
	`ipv4` text,
	`aaaa_record_id` text,
	`ipv6` text,
	`state` text NOT NULL,
	`reason` text,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`server_id`) REFERENCES `servers`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
ALTER TABLE `hosts` ADD `public_ipv4` text;--> statement-breakpoint
ALTER TABLE `hosts` ADD `public_ipv6` text;