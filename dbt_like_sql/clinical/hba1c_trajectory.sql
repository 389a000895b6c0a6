-- Every HbA1c measurement (LOINC 4548-4) of the diabetes cohort, in order, with the change
-- since the previous one.
SELECT
    d.subject_pseudonym,
    o.effective_at AS measured_at,
    o.value_quantity AS hba1c_percent,
    ROW_NUMBER() OVER (PARTITION BY d.subject_pseudonym ORDER BY o.effective_at, o.id) AS measurement_number,
    o.value_quantity - LAG(o.value_quantity) OVER (
        PARTITION BY d.subject_pseudonym ORDER BY o.effective_at, o.id
    ) AS change_since_previous
FROM {{ ref('diabetes_patients') }} AS d
JOIN {{ source('clinical', 'observations') }} AS o
    ON o.subject_pseudonym = d.subject_pseudonym
WHERE o.code_system = 'http://loinc.org'
  AND o.code = '4548-4'
  AND o.value_quantity IS NOT NULL
