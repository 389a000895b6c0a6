"""French and English texts of the portal. Field messages come from the validation rules in
English and are translated here, so the rules stay in one place."""

from __future__ import annotations

LANGUAGES = ("fr", "en")

TEXT = {
    "en": {
        "title": "Your rights on your health data",
        "intro": "Use this form to object to the use of your data, or to ask for access, "
        "erasure, rectification or restriction. We answer within one month.",
        "type": "What do you ask for?",
        "objection": "Objection: stop using my data",
        "erasure": "Erasure: delete my data",
        "access": "Access: send me my data",
        "rectification": "Rectification: correct my data",
        "restriction": "Restriction: pause the use of my data",
        "family_name": "Family name",
        "given_names": "Given names",
        "birth_date": "Date of birth (YYYY-MM-DD)",
        "nir": "Social security number (15 characters, key included)",
        "email": "E-mail address, for our answer",
        "project": "Only for one project (optional)",
        "free_text": "Anything we should know (optional)",
        "submit": "Send my request",
        "fix": "Please correct the highlighted fields.",
        "received": "Your request is registered",
        "keep": "Keep these two values: you need both to follow your request.",
        "tracking": "Tracking number",
        "token": "Secret code",
        "status_title": "Follow my request",
        "status_submit": "Show the status",
        "status_unknown": "No request matches this tracking number and secret code.",
        "status": "Status",
        "deadline": "Answer due by",
        "received_at": "Received on",
        "extended": "The deadline was extended by two months:",
        "completed_summary": "Done: your data was processed in {assets} data sets.",
        "received_state": "received, waiting for identity verification",
        "verified_state": "identity verified, waiting for processing",
        "rejected_state": "rejected",
        "processing_state": "being processed",
        "completed_state": "completed",
        "failed_state": "being processed (a step is retried)",
        "too_many": "Too many requests from your connection. Please try again in a minute.",
        "too_large": "This request is too large.",
        "bad_form": "This request could not be read. Please send the form again.",
        "expired": "This form expired. Please send it again.",
        "other_language": "Version française",
        "new_request": "Make a request",
        "follow": "Follow a request",
    },
    "fr": {
        "title": "Vos droits sur vos données de santé",
        "intro": "Ce formulaire vous permet de vous opposer à l'utilisation de vos données, ou "
        "d'en demander l'accès, l'effacement, la rectification ou la limitation. Nous répondons "
        "sous un mois.",
        "type": "Que demandez-vous ?",
        "objection": "Opposition : ne plus utiliser mes données",
        "erasure": "Effacement : supprimer mes données",
        "access": "Accès : recevoir mes données",
        "rectification": "Rectification : corriger mes données",
        "restriction": "Limitation : suspendre l'utilisation de mes données",
        "family_name": "Nom de famille",
        "given_names": "Prénoms",
        "birth_date": "Date de naissance (AAAA-MM-JJ)",
        "nir": "Numéro de sécurité sociale (15 caractères, clé comprise)",
        "email": "Adresse e-mail, pour notre réponse",
        "project": "Pour un seul projet (facultatif)",
        "free_text": "Précisions (facultatif)",
        "submit": "Envoyer ma demande",
        "fix": "Merci de corriger les champs signalés.",
        "received": "Votre demande est enregistrée",
        "keep": "Conservez ces deux valeurs : elles sont nécessaires pour suivre votre demande.",
        "tracking": "Numéro de suivi",
        "token": "Code secret",
        "status_title": "Suivre ma demande",
        "status_submit": "Afficher l'état",
        "status_unknown": "Aucune demande ne correspond à ce numéro de suivi et ce code secret.",
        "status": "État",
        "deadline": "Réponse attendue au plus tard le",
        "received_at": "Reçue le",
        "extended": "Le délai a été prolongé de deux mois :",
        "completed_summary": "Terminé : vos données ont été traitées dans {assets} jeux de données.",
        "received_state": "reçue, en attente de vérification d'identité",
        "verified_state": "identité vérifiée, en attente de traitement",
        "rejected_state": "refusée",
        "processing_state": "en cours de traitement",
        "completed_state": "terminée",
        "failed_state": "en cours de traitement (une étape est relancée)",
        "too_many": "Trop de demandes depuis votre connexion. Réessayez dans une minute.",
        "too_large": "Cette demande est trop volumineuse.",
        "bad_form": "Cette demande n'a pas pu être lue. Merci d'envoyer à nouveau le formulaire.",
        "expired": "Ce formulaire a expiré. Merci de l'envoyer à nouveau.",
        "other_language": "English version",
        "new_request": "Faire une demande",
        "follow": "Suivre une demande",
    },
}

FIELD_MESSAGES_FR = {
    "required": "obligatoire",
    "choose objection, erasure, access, rectification or restriction": "choisissez un type de demande",
    "letters, spaces, hyphens and apostrophes only, at most 100": "lettres, espaces, traits "
    "d'union et apostrophes uniquement, 100 au plus",
    "must be between 1900-01-01 and today": "doit être comprise entre 1900-01-01 et aujourd'hui",
    "a date as YYYY-MM-DD": "une date au format AAAA-MM-JJ",
    "the 15 characters of the social security number, key included": "les 15 caractères du "
    "numéro, clé comprise",
    "the control key does not match the number": "la clé ne correspond pas au numéro",
    "does not match the year and month of birth in the number": "ne correspond pas à l'année "
    "et au mois de naissance du numéro",
    "a valid e-mail address": "une adresse e-mail valide",
    "no control or invisible formatting characters": "sans caractère de contrôle ni de mise "
    "en forme invisible",
}


def field_message(message: str, lang: str) -> str:
    if lang == "fr":
        if message.startswith("at most"):
            return message.replace("at most", "au plus").replace("characters", "caractères")
        return FIELD_MESSAGES_FR.get(message, message)
    return message


def pick_language(accept_language: str | None) -> str:
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "fr"
