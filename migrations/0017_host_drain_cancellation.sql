ALTER TABLE `host_drains` ADD `cancelled_at` integer;--> statement-breakpoint
ALTER TABLE `host_drains` ADD `cancelled_by` text;