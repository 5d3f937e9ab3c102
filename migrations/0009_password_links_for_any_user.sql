ALTER TABLE `admin_password_links` ADD `user_id` text;--> statement-breakpoint
-- Until now every link set its server's first admin's password.
UPDATE `admin_password_links` SET `user_id` = (SELECT `admin_user_id` FROM `servers` WHERE `servers`.`id` = `admin_password_links`.`server_id`);
