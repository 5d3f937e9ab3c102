ALTER TABLE `servers` ADD `server_name` text;--> statement-breakpoint
CREATE UNIQUE INDEX `servers_server_name_unique` ON `servers` (`server_name`);