-- title: Overcrowding of social rented homes by deprivation decile
-- question: How does overcrowding by the bedroom standard vary with area deprivation?
-- disclosure: published
-- chart: bars imd_decile - overcrowded_pct
-- Reads the published, already protected decile_summary.
SELECT imd_decile,
       households_bedrooms_known AS social_rented_households,
       overcrowded_households,
       overcrowded_pct
FROM decile_summary
ORDER BY imd_decile NULLS LAST
