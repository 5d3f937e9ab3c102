ALTER TABLE `backups` ADD `user_count` integer;--> statement-breakpoint
ALTER TABLE `backups` ADD `room_count` integer;--> statement-breakpoint
ALTER TABLE `backups` ADD `event_count` integer;--> statement-breakpoint
ALTER TABLE `backups` ADD `media_file_count` integer;