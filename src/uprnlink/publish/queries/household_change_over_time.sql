-- title: Households, people 65+ living alone and emergency admissions over three years
-- question: How have household make-up and emergency admissions changed over the last three
--   years? household_snapshots holds households rebuilt from the membership spells on the
--   reference date and each earlier anniversary (what households_as_at returns for them).
-- dimensions: as_at_date
-- disclosure: rows
-- parts: people_65_plus_living_alone of households; multigenerational_households of households
-- counts: households, residents, people_65_plus_living_alone, multigenerational_households, emergency_admissions
-- rates: emergency_admissions_per_1000 = emergency_admissions / residents * 1000
-- chart: line as_at_date - emergency_admissions_per_1000
SELECT as_at_date,
       count(*) AS households,
       sum(residents) AS residents,
       count(*) FILTER (WHERE living_alone AND people_65_plus = 1) AS people_65_plus_living_alone,
       count(*) FILTER (WHERE multigenerational) AS multigenerational_households,
       sum(emergency_admissions) AS emergency_admissions
FROM household_snapshots
WHERE years_before_reference <= 2
GROUP BY as_at_date
ORDER BY as_at_date
