CREATE TABLE `audit_log` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`target` text,
	`detail` text
);
--> statement-breakpoint
CREATE INDEX `audit_log_at_idx` ON `audit_log` (`at`);--> statement-breakpoint
CREATE TABLE `host_usage` (
	`host_id` text NOT NULL,
	`resolution` text NOT NULL,
	`at` integer NOT NULL,
	`cpu_load_percent` real NOT NULL,
	`memory_used_bytes` real NOT NULL,
	`memory_available_bytes` real NOT NULL,
	`disk_used_bytes` real NOT NULL,
	`disk_size_bytes` real NOT NULL,
	`network_rx_bytes` real NOT NULL,
	`network_tx_bytes` real NOT NULL,
	PRIMARY KEY(`host_id`, `resolution`, `at`),
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `hosts` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`region` text NOT NULL,
	`memory_mib` integer NOT NULL,
	`cpus` real NOT NULL,
	`disk_gib` real NOT NULL,
	`public_key` text NOT NULL,
	`status` text NOT NULL,
	`last_seen_at` integer,
	`agent_version` text NOT NULL,
	`protocol_version` integer,
	`disk_encrypted` integer,
	`allow_unencrypted` integer DEFAULT false NOT NULL,
	`disk_devices` text,
	`enrolled_at` integer NOT NULL,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `hosts_name_unique` ON `hosts` (`name`);--> statement-breakpoint
CREATE INDEX `hosts_region_idx` ON `hosts` (`region`);--> statement-breakpoint
CREATE TABLE `jobs` (
	`id` text PRIMARY KEY NOT NULL,
	`host_id` text NOT NULL,
	`kind` text NOT NULL,
	`payload` text NOT NULL,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`deadline` integer NOT NULL,
	`progress` real,
	`progress_message` text,
	`result` text,
	`error` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`finished_at` integer,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `jobs_host_status_idx` ON `jobs` (`host_id`,`status`);--> statement-breakpoint
CREATE TABLE `join_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`region` text NOT NULL,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`used_at` integer,
	`host_id` text
);
--> statement-breakpoint
CREATE TABLE `servers` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`name` text NOT NULL,
	`region` text NOT NULL,
	`host_id` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `servers_name_unique` ON `servers` (`name`);--> statement-breakpoint
CREATE INDEX `servers_user_idx` ON `servers` (`user_id`);--> statement-breakpoint
CREATE TABLE `workload_usage` (
	`workload_id` text NOT NULL,
	`host_id` text NOT NULL,
	`resolution` text NOT NULL,
	`at` integer NOT NULL,
	`cpu_percent` real NOT NULL,
	`memory_bytes` real NOT NULL,
	`memory_limit_bytes` real NOT NULL,
	`network_rx_bytes` real NOT NULL,
	`network_tx_bytes` real NOT NULL,
	`block_read_bytes` real NOT NULL,
	`block_write_bytes` real NOT NULL,
	`pids` real NOT NULL,
	PRIMARY KEY(`workload_id`, `resolution`, `at`)
);
--> statement-breakpoint
CREATE TABLE `workloads` (
	`id` text PRIMARY KEY NOT NULL,
	`host_id` text NOT NULL,
	`kind` text NOT NULL,
	`spec` text NOT NULL,
	`desired` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `workloads_host_idx` ON `workloads` (`host_id`);--> statement-breakpoint
ALTER TABLE `users` ADD `role` text DEFAULT 'customer' NOT NULL;