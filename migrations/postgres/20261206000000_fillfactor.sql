-- Room on every page for a row's next version (ADR 12). A save rewrites a branch row's status,
-- attempts and times, none of them indexed: with free space on its page the new version stays
-- there as a heap-only tuple (HOT) and neither index of trans_branch_op is touched. With full
-- pages (the default fillfactor, 100) nearly every such update was a new tuple on another page
-- plus two index entries. trans_global's updates change indexed columns (next_cron_time,
-- status, update_time), so they are not HOT, but the new version still lands on the same page.
-- Applies to pages written from now on.
ALTER TABLE trans_branch_op SET (fillfactor = 70);
ALTER TABLE trans_global SET (fillfactor = 70);
