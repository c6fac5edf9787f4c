-- title: Long-term conditions by household type and age
-- question: Which kinds of household carry the most long-term illness, once age is taken
--   into account?
-- dimensions: household_type, age
-- counts: people, with_ltc
-- parts: with_ltc of people
-- rates: with_ltc_pct = with_ltc / people * 100
-- chart: bars household_type age with_ltc_pct
SELECT household_type,
       CASE WHEN age_group IN ('00-04', '05-15', '16-17') THEN '00-17'
            WHEN age_group = '18-64' THEN '18-64'
            ELSE '65+' END AS age,
       count(*) AS people,
       count(*) FILTER (WHERE ltc_any) AS with_ltc
FROM person_analysis
WHERE age_group IS NOT NULL
  AND ltc_any IS NOT NULL          -- has a GP record: condition status known
GROUP BY ALL
ORDER BY household_type, age
