// The events a person chooses channels for (the contract's NotificationEvent), in the order the
// preferences list them, and the choices each channel has.
export const EVENTS = [
  'NOTIFICATION_EVENT_GENERATION_COMPLETED',
  'NOTIFICATION_EVENT_GENERATION_FAILED',
  'NOTIFICATION_EVENT_PAYMENT_RECEIVED',
  'NOTIFICATION_EVENT_PAYMENT_FAILED',
  'NOTIFICATION_EVENT_SUBSCRIPTION',
  'NOTIFICATION_EVENT_SERVICE_CREDIT',
] as const

export type NotificationEvent = (typeof EVENTS)[number]

export const EMAIL_CHOICES = ['DELIVERY_IMMEDIATE', 'DELIVERY_DIGEST', 'DELIVERY_OFF'] as const
export const PUSH_CHOICES = ['DELIVERY_IMMEDIATE', 'DELIVERY_OFF'] as const
