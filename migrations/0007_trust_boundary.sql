CREATE TABLE `refusal_counts` (
	`kind` text NOT NULL,
	`reason` text NOT NULL,
	`hour_start` integer NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`kind`, `reason`, `hour_start`)
);
--> statement-breakpoint
CREATE TABLE `server_names` (
	`name` text PRIMARY KEY NOT NULL,
	`server_id` text NOT NULL,
	`claimed_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `hosts` ADD `unencrypted_placement_override` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `servers` ADD `applied_plan_id` text;--> statement-breakpoint
ALTER TABLE `servers` ADD `lifecycle_job_id` text;--> statement-breakpoint
CREATE INDEX `servers_host_idx` ON `servers` (`host_id`);--> statement-breakpoint
CREATE UNIQUE INDEX `servers_one_live_per_user` ON `servers` (`user_id`) WHERE status <> 'deleted';--> statement-breakpoint
-- Names already given out stay given out.
INSERT OR IGNORE INTO `server_names` (`name`, `server_id`, `claimed_at`) SELECT `name`, `id`, `created_at` FROM `servers`;--> statement-breakpoint
-- Servers placed before plan changes existed run with their plan's limits.
UPDATE `servers` SET `applied_plan_id` = `plan_id` WHERE `status` NOT IN ('provisioning', 'deleted');
--> statement-breakpoint
-- Jobs under way when this shipped keep deciding their server's status.
UPDATE `servers` SET `lifecycle_job_id` = (
  SELECT `id` FROM `jobs`
  WHERE json_extract(`jobs`.`payload`, '$.serverId') = `servers`.`id`
    AND `jobs`.`kind` IN ('homeserver.provision', 'homeserver.stop', 'homeserver.start', 'homeserver.suspend', 'homeserver.resume', 'homeserver.upgrade', 'homeserver.restore', 'homeserver.delete')
  ORDER BY `jobs`.`created_at` DESC LIMIT 1
);
