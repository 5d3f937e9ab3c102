ALTER TABLE `jobs` ADD `server_id` text;--> statement-breakpoint
ALTER TABLE `jobs` ADD `backup_id` text;--> statement-breakpoint
CREATE INDEX `jobs_server_idx` ON `jobs` (`server_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `jobs_backup_idx` ON `jobs` (`backup_id`);--> statement-breakpoint
CREATE INDEX `jobs_finished_idx` ON `jobs` (`finished_at`);--> statement-breakpoint
-- Jobs written before these columns existed name what they are about in their payloads.
UPDATE `jobs` SET
  `server_id` = json_extract(`payload`, '$.serverId'),
  `backup_id` = json_extract(`payload`, '$.backupId');
