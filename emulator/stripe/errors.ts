export type StripeErrorType = "invalid_request_error" | "card_error" | "idempotency_error" | "api_error";

export interface StripeErrorInit {
  status: number;
  type: StripeErrorType;
  message: string;
  param?: string;
  code?: string;
  declineCode?: string;
}

/** An error the emulator answers in Stripe's shape: `{"error": {type, message, param?, code?}}`. */
export class StripeError extends Error {
  readonly status: number;
  readonly type: StripeErrorType;
  readonly param: string | undefined;
  readonly code: string | undefined;
  readonly declineCode: string | undefined;

  constructor(init: StripeErrorInit) {
    super(init.message);
    this.status = init.status;
    this.type = init.type;
    this.param = init.param;
    this.code = init.code;
    this.declineCode = init.declineCode;
  }

  toJSON(): { error: Record<string, string> } {
    const error: Record<string, string> = { type: this.type, message: this.message };
    if (this.code !== undefined) {
      error.code = this.code;
      error.doc_url = `https://stripe.com/docs/error-codes/${this.code.replaceAll("_", "-")}`;
    }
    if (this.declineCode !== undefined) error.decline_code = this.declineCode;
    if (this.param !== undefined) error.param = this.param;
    return { error };
  }
}

export function invalidRequest(message: string, param?: string, code?: string): StripeError {
  return new StripeError({ status: 400, type: "invalid_request_error", message, param, code });
}

export function missingParam(param: string): StripeError {
  return invalidRequest(`Missing required param: ${param}.`, param, "parameter_missing");
}

/** A referenced object that does not exist: 404 when named in the URL, 400 when named in a parameter. */
export function noSuch(kind: string, id: string, param?: string): StripeError {
  return new StripeError({
    status: param === undefined ? 404 : 400,
    type: "invalid_request_error",
    message: `No such ${kind}: '${id}'`,
    param: param ?? "id",
    code: "resource_missing",
  });
}
