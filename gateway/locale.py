"""French names and descriptions of the slash commands (Discord shows them to French clients).

The translator looks strings up by where they sit (a name, a description, a choice) and their
English text, the way gettext catalogues work: one English string has one French rendering
wherever it appears. A test walks the command tree and checks every string has one.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

FRENCH_NAMES = {
    "level": "niveau",
    "member": "membre",
    "rank": "rang",
    "balance": "lc",
    "pay": "payer",
    "amount": "montant",
    "daily": "quotidien",
    "inventory": "sac",
    "leaderboard": "classement",
    "board": "critère",
    "period": "période",
    "history": "historique",
    "warn": "avertir",
    "reason": "raison",
    "warnings": "avertissements",
    "show": "afficher",
    "pardon": "pardonner",
    "warning": "avertissement",
    "economy": "économie",
    "grant": "accorder",
    "lc": "lc",
    "xp": "xp",
    "take": "retirer",
    "item": "objet",
    "quantity": "quantité",
    "revert": "annuler",
    "positions": "positions",
    "config": "réglages",
    "set": "définir",
    "setting": "réglage",
    "value": "valeur",
    "no-xp-channel": "salon-sans-xp",
    "channel": "salon",
    "enabled": "actif",
    "no-xp-role": "rôle-sans-xp",
    "role": "rôle",
    "role-multiplier": "multiplicateur-rôle",
    "percent": "pourcentage",
    "channel-multiplier": "multiplicateur-salon",
    "level-role": "rôle-de-niveau",
    "level-roles-mode": "mode-rôles-niveau",
    "mode": "mode",
    "announcements": "annonces",
    "card-colours": "couleurs-carte",
    "accent": "accent",
    "background": "fond",
}

FRENCH_DESCRIPTIONS = {
    "Show your level, XP progress and rank": "Affiche ton niveau, ta progression en XP et ton rang",
    "The member to show (default: you)": "Le membre à afficher (par défaut : toi)",
    "Show your rank card as an image": "Affiche ta carte de rang en image",
    "Show your LC balance": "Affiche ton solde de LC",
    "Send LC to another member": "Envoie des LC à un autre membre",
    "Who receives the LC": "Qui reçoit les LC",
    "How many LC to send": "Combien de LC envoyer",
    "Claim your daily LC gift": "Récupère ton cadeau quotidien de LC",
    "Show your items, and open or activate them": "Affiche tes objets, et ouvre-les ou active-les",
    "The top members by XP or LC earned": "Les meilleurs membres en XP ou en LC gagnés",
    "Rank by XP or by LC earned": "Classer par XP ou par LC gagnés",
    "Which period to rank": "Quelle période classer",
    "Your own statement: every change to your LC, XP and items": (
        "Ton relevé : chaque changement de tes LC, de ton XP et de tes objets"
    ),
    "Warn a member (kept in the moderation log)": (
        "Avertit un membre (gardé dans le journal de modération)"
    ),
    "Who to warn": "Qui avertir",
    "Why (the member and moderators see it)": "Pourquoi (le membre et les modérateurs le voient)",
    "List a member's warnings": "Liste les avertissements d'un membre",
    "Whose warnings to list": "De qui lister les avertissements",
    "Active warnings or all of them": "Les avertissements actifs ou tous",
    "Withdraw one of a member's active warnings": "Retire un avertissement actif d'un membre",
    "Whose warning to withdraw": "De qui retirer l'avertissement",
    "The warning's id (see /warnings)": "L'identifiant de l'avertissement (voir /avertissements)",
    "Why it is withdrawn": "Pourquoi il est retiré",
    "Manage the server's economy": "Gère l'économie du serveur",
    "Give a member LC and/or XP": "Donne des LC et/ou de l'XP à un membre",
    "Who receives it": "Qui les reçoit",
    "LC to give": "LC à donner",
    "XP to give": "XP à donner",
    "Why (kept in the log)": "Pourquoi (gardé dans le journal)",
    "Take LC from a member": "Retire des LC à un membre",
    "Who loses it": "Qui les perd",
    "LC to take": "LC à retirer",
    "Give a member items": "Donne des objets à un membre",
    "Who receives them": "Qui les reçoit",
    "Which item": "Quel objet",
    "How many": "Combien",
    "Undo events by their positions, after a preview": (
        "Annule des événements par leurs positions, après un aperçu"
    ),
    "Event positions, e.g. 12, 15, 20-25 (see /history)": (
        "Positions d'événements, ex. 12, 15, 20-25 (voir /historique)"
    ),
    "Economy settings": "Réglages de l'économie",
    "Show the settings in force": "Affiche les réglages en vigueur",
    "Set a number: XP rates, cooldown, LC amounts": (
        "Règle un nombre : taux d'XP, délai, montants de LC"
    ),
    "Which setting": "Quel réglage",
    "Its new value": "Sa nouvelle valeur",
    "Turn XP off or back on in a channel": "Coupe ou rétablit l'XP dans un salon",
    "The channel": "Le salon",
    "True: no XP there; False: XP again": "Vrai : pas d'XP ici ; Faux : XP à nouveau",
    "Turn XP off or back on for a role": "Coupe ou rétablit l'XP pour un rôle",
    "The role": "Le rôle",
    "True: no XP for it; False: XP again": "Vrai : pas d'XP pour ce rôle ; Faux : XP à nouveau",
    "Set a role's XP multiplier": "Règle le multiplicateur d'XP d'un rôle",
    "Multiplier in percent (150 = x1.5; 100 removes it)": (
        "Multiplicateur en pourcentage (150 = x1,5 ; 100 le retire)"
    ),
    "Set a channel's XP multiplier": "Règle le multiplicateur d'XP d'un salon",
    "Reward a level with a role": "Récompense un niveau par un rôle",
    "The level": "Le niveau",
    "The role it gives (leave empty to remove the reward)": (
        "Le rôle donné (vide pour retirer la récompense)"
    ),
    "Keep every reward role, or only the highest": (
        "Garder tous les rôles de récompense, ou seulement le plus haut"
    ),
    "Stack or replace": "Cumuler ou remplacer",
    "Where level-ups are announced": "Où annoncer les passages de niveau",
    "The channel (leave empty: where the member spoke)": (
        "Le salon (vide : là où le membre a parlé)"
    ),
    "The rank card's colours": "Les couleurs de la carte de rang",
    "Accent colour, e.g. #5865F2": "Couleur d'accent, ex. #5865F2",
    "Background, e.g. #2B2D31": "Fond, ex. #2B2D31",
}

FRENCH_CHOICES = {
    "XP": "XP",
    "LC earned": "LC gagnés",
    "All time": "Depuis toujours",
    "Today": "Aujourd'hui",
    "This week": "Cette semaine",
    "This month": "Ce mois-ci",
    "Active only": "Actifs seulement",
    "All, with pardoned and expired": "Tous, avec les pardonnés et les expirés",
    "jackpot": "jackpot",
    "x2": "x2",
    "x3": "x3",
    "Message XP, minimum": "XP par message, minimum",
    "Message XP, maximum": "XP par message, maximum",
    "Message XP cooldown (seconds)": "Délai entre deux gains d'XP par message (secondes)",
    "Server XP multiplier (%)": "Multiplicateur d'XP du serveur (%)",
    "Voice XP per tick": "XP vocal par tranche",
    "Voice XP hourly bonus": "Bonus d'XP vocal par heure",
    "XP per reaction received": "XP par réaction reçue",
    "Reactions counted per message": "Réactions comptées par message",
    "XP for a game won": "XP pour une partie gagnée",
    "XP for a game lost": "XP pour une partie perdue",
    "Games a multiplier item lasts": "Parties couvertes par un multiplicateur",
    "Starting balance (LC)": "Solde de départ (LC)",
    "Daily gift (LC)": "Cadeau quotidien (LC)",
    "Daily streak bonus (LC per day)": "Bonus de série quotidienne (LC par jour)",
    "Daily streak bonus cap (days)": "Plafond du bonus de série (jours)",
    "Invite reward, inviter (LC)": "Récompense d'invitation, parrain (LC)",
    "Invite reward, new member (LC)": "Récompense d'invitation, nouveau membre (LC)",
    "Confirm /pay above (LC)": "Confirmer /payer au-delà de (LC)",
    "Warning expiry (days)": "Expiration des avertissements (jours)",
    "Warnings before the action": "Avertissements avant la sanction",
    "Timeout length (minutes)": "Durée de l'exclusion temporaire (minutes)",
    "Stack: keep every reward role": "Cumuler : garder tous les rôles de récompense",
    "Replace: only the highest reward role": "Remplacer : seulement le rôle le plus haut",
}

_CATALOGUES = {
    Where.command_name: FRENCH_NAMES,
    Where.group_name: FRENCH_NAMES,
    Where.parameter_name: FRENCH_NAMES,
    Where.command_description: FRENCH_DESCRIPTIONS,
    Where.group_description: FRENCH_DESCRIPTIONS,
    Where.parameter_description: FRENCH_DESCRIPTIONS,
    Where.choice_name: FRENCH_CHOICES,
}


class FrenchTranslator(app_commands.Translator):
    """Translates command names, descriptions and choices to French; other locales keep
    the English text."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """The French text of `string` where it sits in the tree, or None."""
        if locale is not discord.Locale.french:
            return None
        catalogue = _CATALOGUES.get(context.location)
        return catalogue.get(string.message) if catalogue is not None else None
