-- title: Emergency admissions per 1,000 residents by tenure and deprivation decile
-- question: Are emergency admissions higher among social renters at every level of area
--   deprivation, or does deprivation explain the difference?
-- disclosure: published
-- chart: bars imd_decile tenure emergency_admissions_per_1000
-- Reads the published, already protected deprivation_summary (primary and secondary
-- suppression at publish time), so the answer matches it cell for cell.
SELECT imd_decile,
       tenure,
       households,
       residents,
       emergency_admissions,
       emergency_admissions_per_1000
FROM deprivation_summary
ORDER BY imd_decile NULLS LAST, tenure
