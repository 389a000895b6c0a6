-- People with a type 2 diabetes diagnosis (SNOMED CT or ICD-10 E11), with sex and birth year.
WITH diagnoses AS (
    SELECT
        subject_pseudonym,
        MIN(COALESCE(onset_at, recorded_at)) AS first_diagnosed_at,
        COUNT(*) AS diagnosis_records
    FROM {{ source('clinical', 'conditions') }}
    WHERE (code_system = 'http://snomed.info/sct' AND code IN ('44054006', '73211009'))
       OR (code_system = 'http://hl7.org/fhir/sid/icd-10' AND code LIKE 'E11%')
    GROUP BY subject_pseudonym
)
SELECT
    d.subject_pseudonym,
    d.first_diagnosed_at,
    d.diagnosis_records,
    p.gender,
    p.birth_year
FROM diagnoses AS d
LEFT JOIN (
    SELECT subject_pseudonym, MIN(gender) AS gender, MIN(birth_year) AS birth_year
    FROM {{ source('clinical', 'patients') }}
    GROUP BY subject_pseudonym
) AS p ON p.subject_pseudonym = d.subject_pseudonym
