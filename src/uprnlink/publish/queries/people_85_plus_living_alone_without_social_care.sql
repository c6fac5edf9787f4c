-- title: People aged 85+ living alone with no adult social care
-- question: How many of the oldest residents live alone, and how many of them had no adult
--   social care service in the service period, compared with those living with others or
--   in a care home?
-- dimensions: living_arrangement
-- counts: people_85_plus, without_social_care
-- parts: without_social_care of people_85_plus
-- rates: without_social_care_pct = without_social_care / people_85_plus * 100
-- chart: bars living_arrangement - without_social_care_pct
SELECT CASE WHEN lives_in_communal_establishment THEN 'communal_establishment'
            WHEN living_alone THEN 'living_alone'
            ELSE 'living_with_others' END AS living_arrangement,
       count(*) AS people_85_plus,
       count(*) FILTER (WHERE NOT social_care_client) AS without_social_care
FROM person_analysis
WHERE age_group = '85+'
GROUP BY ALL
ORDER BY living_arrangement DESC
