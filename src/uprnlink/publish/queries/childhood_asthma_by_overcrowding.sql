-- title: Childhood asthma in overcrowded and not overcrowded homes
-- question: Is asthma more common among children living in homes that are overcrowded by the
--   bedroom standard? (Bedrooms are known for social rented homes only.)
-- dimensions: overcrowding
-- counts: children, with_asthma
-- parts: with_asthma of children
-- rates: asthma_pct = with_asthma / children * 100
-- chart: bars overcrowding - asthma_pct
-- Children aged 0-15 in social rented homes (where bedrooms are known) with a GP record.
SELECT CASE WHEN overcrowded THEN 'overcrowded' ELSE 'not_overcrowded' END AS overcrowding,
       count(*) AS children,
       count(*) FILTER (WHERE ltc_asthma) AS with_asthma
FROM person_analysis
WHERE age_group IN ('00-04', '05-15')
  AND overcrowded IS NOT NULL      -- bedrooms known: social rented homes
  AND ltc_asthma IS NOT NULL       -- has a GP record, so asthma status is known
GROUP BY ALL
ORDER BY overcrowding DESC
